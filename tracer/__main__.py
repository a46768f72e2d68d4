"""python3 -m tracer (runs from a plain copy of the project)."""
from .cli import main

main(prog_name="tracer")
