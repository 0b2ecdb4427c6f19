"""The runtime: informers, the timer-driven controller, the local runner, the
IPC bridge and the schedule router. It executes what the core decides, against
whichever store adapter it is given.
"""
