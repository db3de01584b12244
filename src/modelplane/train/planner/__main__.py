from modelplane.train.planner.table import main

raise SystemExit(main())
