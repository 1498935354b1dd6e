"""The writable (staging) mount: vfs.py models it over a branch's staging area (no
pyfuse3, no trio), control.py is the .coral/control protocol, ops.py adapts the model to
pyfuse3 and writeback.py applies its queued writes."""
