"""The rebuild service: advisories become events, events become rebuilds of affected images.

model.py    states and plan values (the contract between the parts)
store.py    EventStore: events and rebuilds in the database, their JSON view
planner.py  advisory → the images to rebuild (SBOM index + layered children), parents first
runner.py   one tick of the state machine: discover, plan, submit, observe
watch.py    polling repositories and feeds, importing what changed
service.py  ``alicorn serve``: watch + events + the local worker in one long-running process
"""
