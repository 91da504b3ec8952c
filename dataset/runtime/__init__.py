"""Job machinery shared by the distributed jobs (build, annotate): Ray start/join, the actor pool, progress
bars and failure records."""
