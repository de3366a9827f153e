import os
import sys

# Tests import the float64 NumPy reference as a plain module.
sys.path.insert(0, os.path.dirname(__file__))
