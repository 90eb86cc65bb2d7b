from nbexec.cli import run

run()
