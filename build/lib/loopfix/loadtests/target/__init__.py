"""Target mode: loopfix's storms and checks pointed at a service loopfix did not write.

`config` reads and checks the target file; `adapter` is the Target protocol (Jepsen's client)
and the default adapter that speaks reference_app/openapi.yaml; `doctor` is `loopfix target
check`; `users` are the Locust users that drive a target through an adapter and record only
what is observable outside it; `run` goes from a target file to a checked history.
"""
