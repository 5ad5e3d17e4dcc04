from test_history_command import *
def test_dbg(world):
    l = world.rows("SELECT id,message_id,status,recipients FROM cobranca_letters")
    print(l[:3])
    print([ (m.message["Message-ID"], m.rcpt_tos) for m in world.smtp.received][:3], len(world.smtp.received))
