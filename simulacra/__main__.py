from simulacra.cli import main

raise SystemExit(main())
