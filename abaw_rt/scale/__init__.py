"""Scale-out layer: many videos over a Ray cluster, one worker per model set (``abaw-rt infer|extract --ray``).

Ray is the optional ``[ray]`` extra, imported only inside the functions that use it.
"""
