"""Live ARKit blendshape bars: 52 rows (name, bar, value) painted by one widget.

One QPainter pass over 52 rows costs well under a millisecond; 52 QProgressBars would each re-layout and
repaint through the style on every change. Repaints are throttled to ``MAX_HZ`` (the newest values are
always shown: a change inside the interval schedules one repaint at its end).
"""

from __future__ import annotations

import time

import numpy as np
from PyQt6.QtCore import QRectF, QSize, Qt, QTimer, pyqtSignal
from PyQt6.QtGui import QColor, QFont, QFontMetrics, QMouseEvent, QPainter
from PyQt6.QtWidgets import QScrollArea, QWidget

from face3d_live.expression.arkit import ARKIT_BLENDSHAPES

MAX_HZ = 30.0
ROW_H = 15
BAR_MIN_W = 60


class BlendshapeBars(QWidget):
    """``set_values((52,))`` from the result path; ``set_gains((52,))`` shows gains ≠ 1 next to the value.
    Double-clicking a row emits ``gain_requested(name)``."""

    gain_requested = pyqtSignal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.values = np.zeros(len(ARKIT_BLENDSHAPES), np.float32)
        self.gains = np.ones(len(ARKIT_BLENDSHAPES), np.float32)
        self.paints = 0
        self._last_paint = 0.0
        self._pending = False
        self._font = QFont()
        self._font.setPointSizeF(8.0)
        fm = QFontMetrics(self._font)
        self._name_w = max(fm.horizontalAdvance(n) for n in ARKIT_BLENDSHAPES) + 10
        self._value_w = fm.horizontalAdvance("0.00 ×0.0") + 6
        self.setMinimumHeight(ROW_H * len(ARKIT_BLENDSHAPES) + 4)
        self.setToolTip("live ARKit blendshapes (calibrated) · double-click a row to set its gain")
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent, True)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(self._name_w + BAR_MIN_W + self._value_w, ROW_H * len(ARKIT_BLENDSHAPES) + 4)

    def set_values(self, values: np.ndarray | None) -> None:
        """New values (None: no face → all 0); repainted now or at the end of the throttle interval."""
        v = np.zeros_like(self.values) if values is None else np.asarray(values, np.float32)
        if v.shape != self.values.shape:
            raise ValueError(f"expected {self.values.shape} blendshapes, got {v.shape}")
        self.values = np.clip(np.nan_to_num(v), 0.0, 1.0)
        self._schedule()

    def set_gains(self, gains: np.ndarray) -> None:
        g = np.asarray(gains, np.float32)
        if not np.array_equal(g, self.gains):
            self.gains = g.copy()
            self._schedule()

    def _schedule(self) -> None:
        if self._pending:
            return
        wait_ms = (self._last_paint + 1.0 / MAX_HZ - time.monotonic()) * 1000.0
        if wait_ms <= 0:
            self.update()
        else:
            self._pending = True
            QTimer.singleShot(int(wait_ms) + 1, self._fire)

    def _fire(self) -> None:
        self._pending = False
        self.update()

    def bar_rect(self, row: int) -> QRectF:
        """Where row ``row``'s bar track is painted (widget pixels)."""
        bar_w = max(self.width() - self._name_w - self._value_w, 20)
        return QRectF(self._name_w, 2 + row * ROW_H + 3, bar_w, ROW_H - 6)

    def row_at(self, y: float) -> int | None:
        row = int((y - 2) // ROW_H)
        return row if 0 <= row < len(ARKIT_BLENDSHAPES) else None

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt API
        row = self.row_at(event.position().y())
        if row is not None:
            self.gain_requested.emit(ARKIT_BLENDSHAPES[row])

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt API
        self._last_paint = time.monotonic()
        self.paints += 1
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(27, 28, 32))
        p.setFont(self._font)
        text_color, dim, gain_color = QColor(205, 205, 212), QColor(45, 47, 54), QColor(255, 200, 110)
        first = max(self.row_at(event.rect().top()) or 0, 0)
        last = self.row_at(event.rect().bottom())
        last = len(ARKIT_BLENDSHAPES) - 1 if last is None else last
        for i in range(first, last + 1):
            y = 2 + i * ROW_H
            v, g = float(self.values[i]), float(self.gains[i])
            p.setPen(text_color)
            p.drawText(
                QRectF(4, y, self._name_w - 8, ROW_H),
                int(Qt.AlignmentFlag.AlignVCenter),
                ARKIT_BLENDSHAPES[i],
            )
            track = self.bar_rect(i)
            p.fillRect(track, dim)
            if v > 0:
                # blue → orange as the shape gets stronger
                p.fillRect(QRectF(track.x(), track.y(), track.width() * v, track.height()),
                           QColor(int(70 + 180 * v), int(150 - 20 * v), int(220 - 160 * v)))  # fmt: skip
            label = f"{v:.2f}" if g == 1.0 else f"{v:.2f} ×{g:.1f}"
            p.setPen(text_color if g == 1.0 else gain_color)
            p.drawText(
                QRectF(track.right() + 4, y, self._value_w, ROW_H), int(Qt.AlignmentFlag.AlignVCenter), label
            )
        p.end()


def scrollable(bars: BlendshapeBars) -> QScrollArea:
    """The bars in a vertical scroll area that fits their width."""
    area = QScrollArea()
    area.setWidget(bars)
    area.setWidgetResizable(True)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    area.setMinimumWidth(bars.sizeHint().width() + area.verticalScrollBar().sizeHint().width() + 4)
    return area
