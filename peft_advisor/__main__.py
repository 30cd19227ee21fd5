"""`python -m peft_advisor` is the same as the `peft-advisor` console script."""

from peft_advisor.cli import main

raise SystemExit(main())
