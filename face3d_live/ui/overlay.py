"""Painting the camera view: the tracked mesh (wireframe) and the 68 landmarks drawn on the frame,
the frame letterboxed into the view, and the HUD box. Needs only QtGui, so the headless
benchmark paints exactly what the window paints."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PyQt6.QtCore import QPointF, QRectF, Qt
from PyQt6.QtGui import QColor, QFont, QFontMetrics, QImage, QPainter

from face3d_live.types import Face

_EDGES: dict[bytes, np.ndarray] = {}
MESH_RGB = (80, 255, 140)
MESH_ALPHA = 0.45
LANDMARK_RGB = (255, 80, 60)


@dataclass(frozen=True)
class OverlayOptions:
    mesh: bool = True
    landmarks: bool = True


def frame_qimage(rgb: np.ndarray) -> QImage:
    """A QImage copy of ``rgb`` (HxWx3 uint8) in the raster engine's fast 32-bit format."""
    h, w = rgb.shape[:2]
    rgb = np.ascontiguousarray(rgb)
    return QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888).convertToFormat(
        QImage.Format.Format_RGB32
    )


def _edges(triangles: np.ndarray) -> np.ndarray:
    key = triangles.tobytes()
    if key not in _EDGES:
        e = np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]])
        _EDGES[key] = np.unique(np.sort(e, axis=1), axis=0)
    return _EDGES[key]


def annotate(rgb: np.ndarray, faces: list[Face], options: OverlayOptions = OverlayOptions()) -> np.ndarray:
    """The frame with the tracked mesh (translucent wireframe) and the 68 landmarks drawn on it.

    OpenCV draws all edges in one call (~2 ms for a face at 640x360); Qt's painter needs ~10x that
    for 1300 antialiased lines, which a CPU-only UI thread cannot spare at 30 frames/s.
    """
    if not faces or not (options.mesh or options.landmarks):
        return rgb
    out = rgb.copy()
    if options.mesh:
        for face in faces:
            v = np.round(face.vertices[:, :2] * 16).astype(np.int32)  # 4 fractional bits (shift=4)
            e = _edges(face.triangles)
            cv2.polylines(
                out, np.stack([v[e[:, 0]], v[e[:, 1]]], 1), False, MESH_RGB, 1, cv2.LINE_AA, shift=4
            )
        out = cv2.addWeighted(out, MESH_ALPHA, rgb, 1.0 - MESH_ALPHA, 0.0)
    if options.landmarks:
        radius = max(2, round(min(rgb.shape[:2]) / 180)) * 16
        for face in faces:
            for x, y in np.round(face.landmarks68[:, :2] * 16).astype(np.int32).tolist():
                cv2.circle(out, (x, y), radius, LANDMARK_RGB, -1, cv2.LINE_AA, shift=4)
    return out


def fit_rect(image_w: int, image_h: int, target: QRectF) -> QRectF:
    """The largest rectangle of the image's aspect ratio centred in ``target``."""
    scale = min(target.width() / image_w, target.height() / image_h)
    w, h = image_w * scale, image_h * scale
    return QRectF(target.x() + (target.width() - w) / 2, target.y() + (target.height() - h) / 2, w, h)


def paint_frame(painter: QPainter, target: QRectF, image: QImage) -> QRectF:
    """Draw the (annotated) frame letterboxed into ``target``; returns where the image went."""
    painter.fillRect(target, QColor(16, 16, 20))
    rect = fit_rect(image.width(), image.height(), target)
    painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
    painter.drawImage(rect, image)
    return rect


def hud_font() -> QFont:
    font = QFont("DejaVu Sans Mono")
    font.setStyleHint(QFont.StyleHint.Monospace)
    font.setPointSizeF(9.0)
    return font


def paint_hud(painter: QPainter, origin: QPointF, lines: list[str], warn: bool = False) -> QRectF:
    """A translucent box with the HUD lines at ``origin`` (top-left); returns the box.

    Laying out text costs ~3 ms a frame for eight lines (font matching, shaping); the HUD changes
    at 4 Hz, so the box is rasterised once per change and blitted (~0.05 ms) on every other frame.
    """
    image = _hud_image(tuple(lines), warn)
    painter.drawImage(origin, image)
    return QRectF(origin.x(), origin.y(), image.width(), image.height())


_HUD_CACHE: dict[tuple[tuple[str, ...], bool], QImage] = {}


def _hud_image(lines: tuple[str, ...], warn: bool) -> QImage:
    key = (lines, warn)
    image = _HUD_CACHE.get(key)
    if image is None:
        image = _render_hud(lines, warn)
        _HUD_CACHE.clear()  # only the latest box is ever shown again
        _HUD_CACHE[key] = image
    return image


def _render_hud(lines: tuple[str, ...], warn: bool) -> QImage:
    font = hud_font()
    metrics = QFontMetrics(font)
    pad = 6
    width = max((metrics.horizontalAdvance(s) for s in lines), default=0) + 2 * pad
    height = metrics.lineSpacing() * len(lines) + 2 * pad
    image = QImage(max(width, 1), max(height, 1), QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(QColor(0, 0, 0, 165))
    painter.drawRoundedRect(QRectF(0, 0, width, height), 5, 5)
    painter.setBrush(Qt.BrushStyle.NoBrush)
    painter.setFont(font)
    painter.setPen(QColor(255, 190, 90) if warn else QColor(225, 240, 225))
    y = pad + metrics.ascent()
    for s in lines:
        painter.drawText(QPointF(pad, y), s)
        y += metrics.lineSpacing()
    painter.end()
    return image
