from prefleak.cli import main

raise SystemExit(main())
