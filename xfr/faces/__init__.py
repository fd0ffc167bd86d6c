"""Face preparation: detection and alignment of face lists (:mod:`.align`), FaceMesh frames and
warps onto the canonical canvas (:mod:`.mesh`), synthetic occluders (:mod:`.occluders`)."""
