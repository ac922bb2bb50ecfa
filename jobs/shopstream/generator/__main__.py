from shopstream.generator.cli import main

raise SystemExit(main())
