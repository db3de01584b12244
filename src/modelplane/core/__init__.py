"""Pure domain model: nothing here touches the clock, the network or the disk.

Every other package builds on these types; this package imports nothing else of ours.
"""
