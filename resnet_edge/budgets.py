"""The budgets an untrusted input runs inside: one place for every limit, each with why it is that size.

A model file, its metadata and the images we are given come from others. Each check below refuses, in one line
and before anything large is allocated or started, what would otherwise take the machine's memory or time.
docs/robustness.md lists them for users.
"""

from __future__ import annotations

# --- model files (resnet_edge.onnxfile, resnet_edge.modelbudget) --------------------------------------
# Peak bytes of the tensors alive at once while one frame runs, estimated from ONNX shape inference before a
# session starts. A ResNet-50 at 224x224 peaks near 20 MB per frame; a graph that expands an 800-byte file into
# 40000x40000 floats (6.4 GB) is refused. A batch that would go over it is run in smaller pieces.
ACTIVATION_BUDGET_BYTES = 512 * 2**20
# Subgraph ops (Loop, If, Scan, and any node carrying a graph) are refused in classifier files unless the user
# allows them: no ResNet has any, and a Loop can run 2^62 times.
CONTROL_FLOW_OPS = ("Loop", "If", "Scan", "SequenceMap")
# Seconds one ONNX Runtime run may take on the command line before RunOptions.terminate ends it
# (classify --timeout overrides it). A ResNet-50 batch of 8 on one slow core takes about 2 s.
RUN_TIMEOUT_S = 20.0

# --- metadata_props (resnet_edge.onnxfile, resnet_edge.metadata) ---------------------------------------
MAX_METADATA_ENTRIES = 1024  # ours write about 20
MAX_METADATA_KEY_BYTES = 256
MAX_METADATA_VALUE_BYTES = 4 * 2**20  # ImageNet-21k's 21,843 labels as JSON are about 0.5 MB
MAX_METADATA_TOTAL_BYTES = 8 * 2**20
MAX_LABELS = 100_000  # classes; more than any classifier we know of
MAX_LABEL_CHARS = 256  # one class name
MAX_NAME_CHARS = 256  # arch, precision, layout, input/output and block names

# --- preprocessing (resnet_edge.preprocess) ------------------------------------------------------------
# float32 bytes of one preprocessed batch (N x 3 x H x W x 4). Metadata input_size 8192 at batch 8 would be
# 6.4 GB: refused before anything is allocated. ResNet-50 at batch 32 needs 19 MB.
PREPROCESS_BUDGET_BYTES = 256 * 2**20

# --- the app's model check child (gui.modelcheck) ------------------------------------------------------------
# Address space of the child process that first runs a model the app did not ship (RLIMIT_AS). ONNX Runtime,
# numpy and OpenCV map about 1 GB of address space before any model loads; the rest is the model's.
CHECK_ADDRESS_SPACE_BYTES = 3 * 2**30
