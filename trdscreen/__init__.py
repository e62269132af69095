"""trdscreen: screen antidepressant treatment histories for TRD trial eligibility.

The package is a library with a thin command-line adapter (`trdscreen.cli`).
The pure screening stages live in `trdscreen.pipeline` and the modules it
calls; they do no I/O and never print.
"""

__version__ = "0.9.0"
