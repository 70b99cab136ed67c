from pymesh.cli import main

raise SystemExit(main())
