"""Built-in synthetic YOLO-format datasets (generated on demand; the generated folders are git-ignored)."""
