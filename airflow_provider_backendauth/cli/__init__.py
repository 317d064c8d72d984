"""``backendauth``: the key and connection command line (also ``airflow backendauth ...``).

A thin adapter over ``core``: argument parsing and printing only. Importing it is cheap
(argparse); each command imports what it needs when it runs.
"""
