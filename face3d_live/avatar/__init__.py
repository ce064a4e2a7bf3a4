"""Avatar output: the learned ARKit rig in the face-mesh topology and its personalisation.

from face3d_live.avatar import ArkitRig
rig = ArkitRig.load()
face_shape = rig.shape(face.blendshapes)          # (468, 3) pose-free, canonical frame
"""

from __future__ import annotations

from face3d_live.avatar.rig import ArkitRig, pose_free, rigid_pose

__all__ = ["ArkitRig", "pose_free", "rigid_pose"]
