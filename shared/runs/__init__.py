"""The run: one import or one export, from its opening to the state it ends in.

* :mod:`shared.runs.states`: the states and the table of allowed moves;
* :mod:`shared.runs.outcome`: :class:`RunOutcome`, where a run stands;
* :mod:`shared.runs.store`: every write of the ``run`` table (and the reads the services share);
* :mod:`shared.runs.reporter`: the status event and the run metric that go with each move.

Imported by submodule (``from shared.runs.store import move``): ``shared.messages`` itself takes the
states from here, so this package imports nothing at its top.
"""
