"""``dmimport init``: propose a job config for a file, header and a sample in, commented YAML out.

One module per step: ``sample`` reads the header and the first rows, ``names`` turns headers
into property names, ``infer`` guesses each column's type from its values, ``plan`` chooses the
properties, primary keys and event fields, ``render`` writes the commented YAML, ``propose``
runs them in order (and checks the result with ``importer.job.parse_job``), ``write`` puts the
text on disk. Nothing on the run path imports this package.
"""

from .names import job_name, property_name
from .propose import InitError, Proposal, propose, propose_config
from .write import default_out, render_proposal, write_config

__all__ = [
    "InitError",
    "Proposal",
    "default_out",
    "job_name",
    "property_name",
    "propose",
    "propose_config",
    "render_proposal",
    "write_config",
]
