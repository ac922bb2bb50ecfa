from shopstream.events.generator.cli import main

raise SystemExit(main())
