"""``python -m workbench`` and the PyInstaller bundle's entry script."""

import multiprocessing
import sys

if __name__ == "__main__":
    # In a frozen bundle, a child process (multiprocessing, DataLoader workers) re-runs this executable:
    # freeze_support() turns it into the child instead of a second app. A no-op everywhere else.
    multiprocessing.freeze_support()
    from workbench.cli import main

    sys.exit(main())
