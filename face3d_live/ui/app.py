"""Start the Qt application: GL surface format, dark theme, the main window."""

from __future__ import annotations

import os
import sys

from face3d_live.errors import Face3DError
from face3d_live.ui.config import AppConfig


def check_display() -> None:
    """A clear error instead of Qt aborting the process when there is no display to open."""
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or os.environ.get("QT_QPA_PLATFORM")
    ):
        raise Face3DError(
            "no display: run the app in a desktop session (or under Xvfb: DISPLAY=:99); "
            "headless, use `face3d-live process` or `face3d-live bench app`"
        )


def setup_qt():
    """The QApplication (made once per process) with an OpenGL 3.3 core default surface format."""
    from PyQt6.QtGui import QColor, QPalette, QSurfaceFormat
    from PyQt6.QtWidgets import QApplication

    app = QApplication.instance()
    if app is not None:
        return app
    fmt = QSurfaceFormat()
    fmt.setVersion(3, 3)
    fmt.setProfile(QSurfaceFormat.OpenGLContextProfile.CoreProfile)
    fmt.setDepthBufferSize(24)
    fmt.setSamples(int(os.environ.get("FACE3D_MSAA", "0")))  # multisampling costs 4x fill on a CPU rasteriser
    QSurfaceFormat.setDefaultFormat(fmt)  # before the QApplication: applies to every GL widget
    app = QApplication([sys.argv[0]])
    app.setApplicationName("face3d-live")
    app.setStyle("Fusion")
    pal = QPalette()
    for role, color in (
        (QPalette.ColorRole.Window, (37, 38, 43)),
        (QPalette.ColorRole.WindowText, (225, 225, 230)),
        (QPalette.ColorRole.Base, (27, 28, 32)),
        (QPalette.ColorRole.AlternateBase, (45, 46, 52)),
        (QPalette.ColorRole.Text, (225, 225, 230)),
        (QPalette.ColorRole.Button, (50, 52, 58)),
        (QPalette.ColorRole.ButtonText, (225, 225, 230)),
        (QPalette.ColorRole.Highlight, (60, 130, 200)),
        (QPalette.ColorRole.HighlightedText, (255, 255, 255)),
        (QPalette.ColorRole.ToolTipBase, (50, 52, 58)),
        (QPalette.ColorRole.ToolTipText, (225, 225, 230)),
    ):
        pal.setColor(role, QColor(*color))
    app.setPalette(pal)
    return app


def run_app(config: AppConfig) -> int:
    check_display()
    app = setup_qt()
    from face3d_live.ui.main_window import MainWindow

    window = MainWindow(config)
    window.show()
    app.exec()
    if window.fatal and config.quit_after_frames is not None:
        raise Face3DError(window.fatal)
    return 0
