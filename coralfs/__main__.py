from coralfs.cli.main import run

run()
