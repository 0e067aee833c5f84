"""Convert the STELIB v3.2 observed spectra to a survey-layout HDF5 file on the MR grid.

The same as `specstream convert-stelib`, kept as a script for users who run tools directly:

    python tools/convert_stelib.py stelib_mr.h5 --teff-min 3750 --teff-max 6000
"""

import sys

from specstream.cli import app

if __name__ == "__main__":
    app(["convert-stelib", *sys.argv[1:]], prog_name="convert_stelib.py")
