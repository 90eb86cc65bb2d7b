from nbexec.cli import main

raise SystemExit(main())
