from s9tune.cli import main

raise SystemExit(main())
