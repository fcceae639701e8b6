from openflare.cli import main

raise SystemExit(main())
