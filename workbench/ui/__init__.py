"""The desktop app (PySide6, pyqtgraph, superqt): the only package that imports Qt."""
