"""Imported by the forkserver of tests/faults/faultkit.py: the lab and the smoke data, once."""
import faultkit

faultkit.preload()
