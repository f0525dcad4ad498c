// The webhook handler of the product documentation, kept as written there
// (run by tsx, which strips types without checking them, as the snippet is
// not strict-mode clean); only the surroundings are added: the imports, a
// handleMediaModerated that reports, a report line per request for the test
// to read, and a listener on the port the test gives.
import express from 'express';
import { createHmac } from 'crypto';

function verifyWebhookSignature(
  payload: string,
  signature: string,
  secret: string
): boolean {
  const expected = createHmac('sha256', secret)
    .update(payload)
    .digest('hex');
  
  return expected === signature;
}

function report(line: object) {
  process.stdout.write(JSON.stringify(line) + '\n');
}

function handleMediaModerated(data: any) {
  report({ handled: 'media.moderated', media_id: data.media_id, status: data.status });
}

const app = express();

app.post('/webhooks/pixel-patrol', express.raw({ type: 'application/json' }), (req, res) => {
  const signature = req.headers['x-pixelpatrol-signature'];
  const payload = req.body.toString();
  
  // Verify signature
  if (!verifyWebhookSignature(payload, signature, process.env.WEBHOOK_SECRET)) {
    report({ rejected: true, signature });
    return res.status(401).send('Invalid signature');
  }
  
  const event = JSON.parse(payload);
  report({ accepted: event.event, id: event.id });
  
  // Handle event
  switch (event.event) {
    case 'media.moderated':
      handleMediaModerated(event.data);
      break;
    case 'test.webhook':
      console.log('Test webhook received');
      break;
  }
  
  // Acknowledge receipt
  res.status(200).send('OK');
});

const server = app.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => {
  const address = server.address();
  report({ listening: typeof address === 'object' && address ? address.port : null });
});
