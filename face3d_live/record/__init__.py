"""Recording reconstructed sequences: GLB (morph-target animation + head pose + texture), OBJ, NPZ, and
avatar output: ``RecordConfig(rig="arkit")`` (every face as a personal ARKit rig, ``rig.py``) and
``format="livelink-csv"`` (Live Link Face CSV takes, ``livelink.py``).

    from face3d_live.record import RecordConfig, SequenceWriter
    with SequenceWriter("take.glb", RecordConfig(quantize=True), fps=30) as w:
        for i, (rgb, t) in enumerate(frames):
            w.write(i, t, rec.track(rgb, t), image=rgb)

Frames are journalled to ``take.glb.journal/`` as they arrive; ``recover(dir)`` rebuilds the asset
from a journal left by a killed recording.
"""

from __future__ import annotations

from face3d_live.record.config import RecordConfig
from face3d_live.record.journal import Recording, read_journal
from face3d_live.record.writer import SequenceWriter, open_writer, recover

__all__ = ["RecordConfig", "Recording", "SequenceWriter", "open_writer", "read_journal", "recover"]
