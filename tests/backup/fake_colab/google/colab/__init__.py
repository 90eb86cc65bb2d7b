"""A stand-in for Colab's ``google.colab`` package (tests only): ``drive`` mounts a plain folder."""
