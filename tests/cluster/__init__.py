"""The cluster test stage: a real kind cluster, the images it runs, and the tests that drive it."""
