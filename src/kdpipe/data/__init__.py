"""Data: download and verify raw archives, generate offline sets, write prepared tensors."""
