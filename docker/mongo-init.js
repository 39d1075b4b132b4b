// Run once by the compose file's mongo-init service (mongosh, connected to mongo1):
// initiates the three-member replica set rs0 on first start, finds it initiated on later
// starts, and in both cases waits until a primary is elected, so that the gateways start
// against a writable replica set. Members and the set's name must match compose.yaml
// (tests/test_deploy.py checks that they do).
const config = {
  _id: "rs0",
  members: [
    // mongo1 is preferred as primary (priority 2) so that a fresh set elects it at once;
    // any member may take over when it is down.
    { _id: 0, host: "mongo1:27017", priority: 2 },
    { _id: 1, host: "mongo2:27017", priority: 1 },
    { _id: 2, host: "mongo3:27017", priority: 1 },
  ],
};

try {
  rs.status();
  print("replica set " + config._id + " already initiated");
} catch (e) {
  if (e.codeName !== "NotYetInitialized") {
    throw e;
  }
  rs.initiate(config);
  print("replica set " + config._id + " initiated");
}

for (let i = 0; i < 120; i++) {
  try {
    const members = rs.status().members || [];
    if (members.some((m) => m.stateStr === "PRIMARY")) {
      print("primary elected");
      quit(0);
    }
  } catch (e) {
    print("waiting for the replica set: " + e.message); // still forming after initiate
  }
  sleep(1000);
}
print("no primary after 120 s");
quit(1);
