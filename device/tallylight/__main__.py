from tallylight.cli import main

raise SystemExit(main())
