"""python -m tracer.vm: the vm-* commands on their own (also registered in `tracer`)."""
from .cli import main

main()
