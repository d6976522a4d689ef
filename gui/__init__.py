"""The resnet-edge desktop app (PySide6). Uses only the torch-free runtime."""
