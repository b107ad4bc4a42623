from sftrl.cli import main

raise SystemExit(main())
