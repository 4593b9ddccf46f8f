// Drives roomstate with LiveKit's official Node server SDK (JSON encoding).
//   node livekit-sdk.mjs token <url> <key> <secret> <room> <identity>   -> prints a participant token
//   node livekit-sdk.mjs calls <url> <key> <secret> <room>              -> calls every RoomService method, prints JSON
import { AccessToken, RoomServiceClient } from 'livekit-server-sdk';

const [mode, url, key, secret, room, identity] = process.argv.slice(2);

if (mode === 'token') {
  const token = new AccessToken(key, secret, { identity, name: 'Made in JS', attributes: { origin: 'node' } });
  token.addGrant({ roomJoin: true, room, canUpdateOwnMetadata: true });
  console.log(await token.toJwt());
} else if (mode === 'calls') {
  const rooms = new RoomServiceClient(url, key, secret);
  const out = {};
  out.rooms = (await rooms.listRooms()).map((r) => ({ name: r.name, numParticipants: r.numParticipants }));
  out.participants = (await rooms.listParticipants(room)).map((p) => p.identity).sort();
  out.got = (await rooms.getParticipant(room, 'js-minted')).name;
  const updated = await rooms.updateParticipant(room, 'js-minted', {
    metadata: 'from node',
    attributes: { origin: '', hand: 'up' },
    name: 'Renamed in JS',
  });
  out.updated = { metadata: updated.metadata, attributes: updated.attributes, name: updated.name };
  out.roomMetadata = (await rooms.updateRoomMetadata(room, 'set from node')).metadata;
  await rooms.removeParticipant(room, 'rust-side');
  try {
    await rooms.getParticipant(room, 'rust-side');
    out.removed = false;
  } catch (error) {
    out.removed = true;
    out.notFoundStatus = error.status;
  }
  console.log(JSON.stringify(out));
} else {
  console.error('usage: livekit-sdk.mjs token|calls ...');
  process.exit(2);
}
