"""Import path of yolo-compress 0.1, kept so its pruned checkpoints still load.

They pickle ``yolo_compress.pruning.c2f.C2fChunkFree``; the class now lives in ``yolo_compress.prune.c2f``.
"""

import sys

from yolo_compress.prune import c2f

sys.modules[f"{__name__}.c2f"] = c2f
