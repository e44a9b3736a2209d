from stmgt.cli import main

raise SystemExit(main())
