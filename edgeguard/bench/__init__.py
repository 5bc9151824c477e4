"""`edgeguard bench`: protection and speed on annotated sets, measured against the peers.

Not part of the appliance: it reads measurement data (``../shared/data/faces``), runs every
tool as a child process and writes a report. Modules: :mod:`.score` (the scoring, pure
numpy), :mod:`.sets` (finding and sampling sets), :mod:`.runners` (children, timing, peak
memory), :mod:`.floor` (the codec floor child), :mod:`.suite` (the run), :mod:`.report`.
"""
