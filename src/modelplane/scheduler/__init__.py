"""Admission and placement: pure policy over core/ types, driven live by control/ and in replays by sim/."""
