"""A script that lets its secrets out every way it can: prints them, and fails with one in the message.

    leak.py --password VALUE --api-key=VALUE
"""

import os
import sys

token = os.environ["DEMO_API_TOKEN"]
print(f"argv: {sys.argv[1:]}")
print(f"calling https://user:{token}@hub.example.com with {os.environ['HF_TOKEN']}", flush=True)
sys.stderr.write(f"warning: retrying with token {token}\n")
raise RuntimeError(f"401 from https://user:{token}@hub.example.com (password {sys.argv[2]})")
