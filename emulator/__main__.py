from emulator.cli.main import entry

entry()
