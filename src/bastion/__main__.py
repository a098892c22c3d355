from bastion.cli import app

app(prog_name="bastion")
