"""One package per paper or question; run with `python -m experiments.<name> --scale ...`."""
