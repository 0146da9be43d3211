"""The Qt-free core: data, models, jobs, runner, workspace, measurement and reports.

Nothing under this package may import Qt; the batch mode and the core tests run without a display.
"""
