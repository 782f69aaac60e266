"""The case runner's helper modules (``needs``, ``caserun``, ``expect``, ``fileserver``) live next to
the tests and are imported by their bare names (pytest puts this folder on ``sys.path``).

Nothing else lives here.
"""
